"""showcase: a tiny real Django project that backstage's end-to-end tests deploy."""
