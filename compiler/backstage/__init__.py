"""backstage: a deployment compiler for WSGI/Django apps served by uWSGI and nginx."""

__version__ = "0.1.0"
