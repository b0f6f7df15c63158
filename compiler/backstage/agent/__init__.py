"""The host agent: makes one artifact live on a host, with zero downtime, and can undo it.

Every artifact carries it as agent.pyz (a zipapp of this package, ../contract.py and ../files.py) and
install.sh runs it there, as root, with the host's Python 3: it is standard library only, so a host
needs no backstage. The switch follows the procedure that lost no request in
../shared/notes/uwsgi-nginx-facts.md:

1. verify the artifact against its manifest and its own name, and `nginx -t` it hermetically;
2. take the production's lock;
3. start the vassals that are new (their names carry a content hash, so a changed Sess is new too)
   and wait until each answers a real request; unchanged vassals are never touched;
4. point `current` at the generation, `nginx -t` the host, reload, wait for the old workers to exit;
5. check every Gig through nginx; on failure undo steps 4 and 3;
6. only then stop the vassals that left.

Every step is idempotent and state lives only in links, so a run killed at any point leaves nginx on
the old or the new generation with all of that generation's vassals running; running again converges.

Modules: cli (the install.sh command line), switch (the procedure above), generations (listing,
rollback targets, gc), state (the production's place on the host), outcomes (how a run ends), and the
host's parts: nginx, emperor, probes, procfs.
"""
