"""The peer: ansible-core's `template` module rendering the same vassal and nginx files.

Ansible's template module cannot take a Jinja2 `finalize`, so the contexts the floor computes are
escaped here, ahead of time, with the very functions backstage's finalize uses; the templates
themselves are the installed package's, unchanged. Preparing the vars file is not timed: it stands
for the inventory and group_vars an Ansible user would already have.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from backstage import targets
from floor import vassal_contexts, venue_contexts
from generate import generate

ANSIBLE_REQUIREMENT = "ansible-core>=2.16,<2.20"

# Ansible's documented way to give a template backstage's Environment settings (its `template`
# module has no keep_trailing_newline option); Ansible drops this line before rendering.
JINJA_HEADER = "#jinja2: trim_blocks: True, lstrip_blocks: True, keep_trailing_newline: True\n"

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [vars.json]
  tasks:
    - name: vassals
      ansible.builtin.template:
        src: vassal.ini.j2
        dest: "{{ out }}/uwsgi/{{ item.file }}"
        mode: "0444"
      loop: "{{ vassals }}"
      loop_control: {label: "{{ item.file }}"}
      vars:
        production: "{{ item.c.production }}"
        sess: "{{ item.c.sess }}"
        act: "{{ item.c.act }}"
        stage: "{{ item.c.stage }}"
        entry: "{{ item.c.entry }}"
        restart: 0
        code: "{{ item.c.code }}"
        virtualenv: "{{ item.c.environment }}"
        socket_owner: "{{ item.c.socket_owner }}"
        nginx_user: "{{ item.c.nginx_user }}"
        logto: "{{ item.c.logto }}"
        options: "{{ item.c.options }}"
        socket_option: "{{ item.c.socket_option }}"
        bind: "{{ item.c.bind }}"
    - name: venues
      ansible.builtin.template:
        src: venue.conf.j2
        dest: "{{ out }}/nginx/{{ item.file }}"
        mode: "0444"
      loop: "{{ venues }}"
      loop_control: {label: "{{ item.file }}"}
      vars:
        production: "{{ item.c.production }}"
        venue: "{{ item.c.venue }}"
        locations: "{{ item.c.locations }}"
        has_root: "{{ item.c.has_root }}"
        hsts: "{{ item.c.hsts }}"
        https_port: "{{ item.c.https_port }}"
        acme_root: "{{ item.c.acme_root }}"
"""


def escaped(value: Any, finalize: Callable[[Any], str]) -> Any:
    """`value` with every leaf that a template prints already passed through `finalize`."""
    if value is None or (isinstance(value, bool) and finalize is targets.nginx.token):
        return value  # only tested by `{% if %}`, never printed
    if type(value) is int:
        return value  # printed as itself, and compared with numbers (`https_port`)
    if isinstance(value, dict):
        return {k: escaped(v, finalize) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if finalize is targets.nginx.token and value and all(isinstance(v, str) for v in value):
            return str(targets.nginx.server_names(value))  # the one list nginx prints: server_name's
        return [escaped(v, finalize) for v in value]
    return finalize(value)


def without_slot_filters(text: str) -> str:
    """Ansible has no backstage filters: the values they escape are escaped ahead of time here instead."""
    for filtered, plain in (("{{ venue.hosts | server_names }}", "{{ venue.hosts }}"),
                            ("{{ loc.path | location }}", "{{ loc.path }}"),
                            ("{{ loc.path | prefix_regex }}", "{{ loc.path_regex }}"),
                            ("{{ key | option }}", "{{ key }}")):
        text = text.replace(filtered, plain)
    assert "|" not in text.replace("||", ""), "a slot filter the peer does not know"
    return text


def prepare(n: int, workdir: Path) -> Path:
    """Write the playbook, its templates, vars and inventory into workdir; the caller gives `-e out=DIR`."""
    data = generate(n)
    vassals = [{"file": Path(rel).name, "c": escaped(c, targets.uwsgi.value)} for rel, c in vassal_contexts(data)
               if rel.endswith(".ini")]
    venues = [{"file": Path(rel).name, "c": escaped(c, targets.nginx.token) | {"hsts": c["hsts"] or ""}}
              for rel, c in venue_contexts(data)]  # an empty `hsts` is only tested, never printed
    workdir.mkdir(parents=True, exist_ok=True)
    templates = resources.files("backstage.targets") / "templates"
    for name in ("vassal.ini.j2", "venue.conf.j2"):
        # `environment` is a keyword of Ansible's tasks: a variable of that name is always [].
        text = templates.joinpath(name).read_text("utf-8").replace("{{ environment }}", "{{ virtualenv }}")
        (workdir / name).write_text(JINJA_HEADER + without_slot_filters(text), "utf-8")
    # What they include, found beside them (Ansible looks in the including template's directory); the
    # header line is read from the top template only.
    for name in ("acme-location.j2",):
        (workdir / name).write_text(without_slot_filters(templates.joinpath(name).read_text("utf-8")), "utf-8")
    # Fixed text with no variables: backstage renders it once and passes it to every venue, as here.
    params = templates.joinpath("uwsgi_params.j2").read_text("utf-8")
    (workdir / "vars.json").write_text(json.dumps({"vassals": vassals, "venues": venues, "uwsgi_params": params}),
                                       "utf-8")
    (workdir / "playbook.yml").write_text(PLAYBOOK, "utf-8")
    (workdir / "inventory").write_text(
        "localhost ansible_connection=local ansible_python_interpreter='{{ ansible_playbook_python }}'\n", "utf-8")
    return workdir / "playbook.yml"


def command(ansible_playbook: Path, playbook: Path) -> list[str]:
    """The timed command; the output dir must already hold uwsgi/ and nginx/."""
    return [str(ansible_playbook), "-i", str(playbook.parent / "inventory"), "-c", "local", str(playbook)]


def environment(scratch: Path) -> dict[str, str]:
    """Ansible's settings, with every file it keeps for itself under `scratch` rather than in ~/.ansible."""
    env = dict(os.environ)
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_PIPELINING="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_DEPRECATION_WARNINGS="0",
               ANSIBLE_HOME=str(scratch / "home"), ANSIBLE_LOCAL_TEMP=str(scratch / "local"),
               ANSIBLE_REMOTE_TMP=str(scratch / "remote"))
    return env


def ensure_ansible(venv_dir: Path) -> Path:
    """ansible-playbook from a venv of its own outside the repo, created on first use."""
    tool = venv_dir / "bin" / "ansible-playbook"
    if not tool.exists():
        print(f"installing {ANSIBLE_REQUIREMENT} into {venv_dir} ...", file=sys.stderr, flush=True)
        venv.create(venv_dir, with_pip=True)
        subprocess.run([str(venv_dir / "bin" / "pip"), "install", "-q", ANSIBLE_REQUIREMENT], check=True)
    return tool
