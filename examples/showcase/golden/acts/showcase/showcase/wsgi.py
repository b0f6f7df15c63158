"""WSGI entry point: showcase.wsgi:application.

SHOWCASE_BREAK_IMPORT=1 makes the import fail, to test a generation whose app cannot start.
"""

import os

from django.core.wsgi import get_wsgi_application

if os.environ.get("SHOWCASE_BREAK_IMPORT") == "1":
    raise RuntimeError("showcase: SHOWCASE_BREAK_IMPORT=1, refusing to start")

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "showcase.settings")
application = get_wsgi_application()
