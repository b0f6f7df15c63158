import os

from django.http import HttpRequest, HttpResponse


def index(request: HttpRequest) -> HttpResponse:
    version = os.environ.get("SHOWCASE_VERSION", "1")
    script_name = request.META.get("SCRIPT_NAME", "")
    return HttpResponse(
        f"showcase {version} script_name={script_name} path={request.path} path_info={request.path_info}\n",
        content_type="text/plain; charset=utf-8",
    )


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain; charset=utf-8")
