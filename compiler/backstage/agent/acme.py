"""ACME on the host: certificates for `tls = { acme = true }` Venues, through certbot's webroot.

Certificates live in certbot's own config directory, state_dir/certs/ (live/<venue>/fullchain.pem and
privkey.pem), outside every generation: rollback, forward and gc never touch them, so switching back
and forth never asks the CA again. Beside them, certs/backstage/<venue>.names records the names each
was obtained for; a certificate counts as present only for exactly those names.

In a switch, after the store is ready and before any vassal starts (`obtain`): if a Venue lacks its
certificate, nginx is pointed at state_dir/acme.conf, which serves each such Venue's challenge file
(the artifact's acme/<venue>.conf: the challenge from state_dir/acme/, 503 for everything else) ahead
of the live generation's own servers, and reloaded; certbot then gets each certificate. Only then does
the switch go on to the generation whose TLS servers read them, through the host's `nginx -t`. A
failure of certbot is undone like any other: nginx goes back to what it served before.

`renew` (the `renew` verb, for a timer) runs `certbot renew` for each of the live generation's
certificates and reloads nginx only when one of them changed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..contract import ACME_WEBROOT, CERTS, AcmePlan, CertificatePlan, Plan
from ..files import write_file
from . import commands, nginx, trust
from .outcomes import Failed, Refused, out, say
from .state import CURRENT, State

PENDING = "acme.conf"  # state_dir/acme.conf: what nginx serves while certbot gets certificates
RECORDS = "backstage"  # state_dir/certs/backstage/: the names each certificate was obtained for
CERTBOT_TIMEOUT = 300.0  # one certbot run; the CA's own retries end well before


def certs_dir(plan: Plan) -> Path:
    return Path(plan.state_dir) / CERTS


def webroot(plan: Plan) -> Path:
    return Path(plan.state_dir) / ACME_WEBROOT


def _record(plan: Plan, venue: str) -> Path:
    return certs_dir(plan) / RECORDS / f"{venue}.names"


def _names_text(names: Sequence[str]) -> str:
    return "".join(f"{name}\n" for name in names)


def present(plan: Plan, cert: CertificatePlan) -> bool:
    """Whether `cert` exists, obtained for exactly its names."""
    try:
        recorded = _record(plan, cert.venue).read_text()
    except (OSError, UnicodeDecodeError):
        return False
    return recorded == _names_text(cert.names) and os.path.isfile(cert.fullchain) and os.path.isfile(cert.key)


def missing(plan: Plan) -> list[CertificatePlan]:
    """The certificates of `plan` that apply must get before its TLS servers can go live."""
    return [cert for cert in plan.certificates if not present(plan, cert)]


def prepare(plan: Plan) -> None:
    """The directories certbot writes into: the webroot nginx reads (0755), the certificates (0700)."""
    if not plan.certificates:
        return
    root = Path(plan.state_dir)
    trust.subdirectory(root, ACME_WEBROOT, "state_dir/acme")
    certs = trust.subdirectory(root, CERTS, "state_dir/certs")
    os.chmod(certs, 0o700)  # private keys; nginx's master reads them as root
    trust.subdirectory(certs, RECORDS, "state_dir/certs/backstage")


def pending_config(state: State, generation: Path, certificates: Sequence[CertificatePlan]) -> str:
    """state_dir/acme.conf: the challenge servers first (nginx picks the first of two servers with one
    name on one port), then whatever the live generation serves."""
    lines = ["# backstage: served while apply gets ACME certificates; apply points nginx back when done."]
    lines += [f"include {generation / cert.challenge};" for cert in certificates]
    lines.append(f"include {state.root / CURRENT / 'nginx'}/*.conf;")
    return "\n".join(lines) + "\n"


def write_pending(state: State, text: str) -> Path:
    """Write state_dir/acme.conf anew (never through a link), atomically."""
    path = state.root / PENDING
    write_file(path, text.encode(), 0o644)
    return path


def certbot(plan: Plan, acme: AcmePlan, *args: str) -> commands.Done:
    """Run certbot (the host's command prefix) with its directories under state_dir and log_dir."""
    certs = certs_dir(plan)
    argv = [*acme.certbot, *args, "--non-interactive", "--config-dir", str(certs),
            "--work-dir", str(certs / ".work"), "--logs-dir", str(Path(plan.log_dir) / "certbot")]
    return commands.run(argv, cwd=Path(plan.state_dir), env=dict(os.environ), timeout=CERTBOT_TIMEOUT)


_NOISE = ("Saving debug log", "Ask for help", "See the logfile", "Some challenges have failed", "All renewals failed",
          "The following certificates could not be renewed", "An unexpected error occurred")


def why(done: commands.Done) -> str:
    """certbot's reason, in one line: the CA's `Detail:` line (a failed challenge), the line naming a
    failed renewal's error, else its last line that is not boilerplate."""
    if done.timed_out:
        return f"certbot gave no answer within {CERTBOT_TIMEOUT:.0f} s"
    lines = [line.strip() for line in done.output.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Detail:") or " with error: " in line:
            return line
    useful = [line for line in lines if not line.startswith(_NOISE) and "failure(s)" not in line
              and not line.endswith("(failure)")]
    return (useful or lines or [f"exit status {done.code}"])[-1]


def obtain_one(plan: Plan, acme: AcmePlan, cert: CertificatePlan) -> None:
    """Get `cert` for its names through the webroot; record the names once it exists."""
    contact = ("--email", acme.email) if acme.email else ("--register-unsafely-without-email",)
    domains = [arg for name in cert.names for arg in ("-d", name)]
    done = certbot(plan, acme, "certonly", "--webroot", "-w", str(webroot(plan)), "--cert-name", cert.venue,
                   *domains, "--server", acme.directory, "--agree-tos", *contact, "--keep-until-expiring")
    if done.code != 0 or not (os.path.isfile(cert.fullchain) and os.path.isfile(cert.key)):
        raise Failed(f"venue {cert.venue}: certbot could not get its certificate from {acme.directory}: "
                     f"{why(done)}\n{commands.tail(done.output)}")
    write_file(_record(plan, cert.venue), _names_text(cert.names).encode(), 0o644)
    out(f"certificate for venue {cert.venue}: {', '.join(cert.names)}")


def obtain(state: State, generation: Path, serve: Callable[[Path], None]) -> None:
    """Get the certificates the generation lacks, serving their challenges meanwhile: `serve(path)`
    points nginx at the file `path` and reloads it (the switch records that, to undo it)."""
    plan = state.plan
    wanted = missing(plan)
    if not wanted:
        return
    if plan.acme is None:
        raise Refused("the plan has ACME Venues but no [host.acme]")
    serve(write_pending(state, pending_config(state, generation, wanted)))
    for cert in wanted:
        obtain_one(plan, plan.acme, cert)


def _digest(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return ""


def renew(state: State, force: bool, drain: float) -> int:
    """Renew the live generation's certificates that are due (all of them with `force`); reload nginx
    only when one changed. Returns the exit code: 0 also when nothing was due."""
    plan = state.plan
    if not plan.certificates or plan.acme is None:
        out("no ACME Venue is live: nothing to renew")
        return 0
    changed: list[str] = []
    failed: list[str] = []
    for cert in plan.certificates:
        if not present(plan, cert):
            failed.append(f"venue {cert.venue}: no certificate yet (apply gets the first one)")
            continue
        before = _digest(cert.fullchain)
        done = certbot(plan, plan.acme, "renew", "--cert-name", cert.venue, "--no-random-sleep-on-renew",
                       *(("--force-renewal",) if force else ()))
        if done.code != 0:
            failed.append(f"venue {cert.venue}: certbot renew failed: {why(done)}")
        elif _digest(cert.fullchain) != before:
            changed.append(cert.venue)
            out(f"renewed the certificate of venue {cert.venue}")
        else:
            out(f"venue {cert.venue}: not due")
    if changed:
        try:
            nginx.test(plan.host.nginx, "the host configuration")
            if not nginx.reload(plan.host.nginx, drain):
                say(f"warning: old nginx workers still running after {drain:.0f} s")
        except nginx.NginxError as exc:
            failed.append(f"nginx did not take the renewed certificates: {exc}")
        else:
            out("nginx reloaded")
    for line in failed:
        say(line)
    return 1 if failed else 0
