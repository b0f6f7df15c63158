"""The compiler's phases, in order; none imports a later one (pipeline.py runs them all):

    load       TOML bytes -> plain data, with key positions for errors
    normalise  every default filled in, once (from the schema, or derived)
    graph      the production's things and relations as one networkx graph
    check      the JSON Schema plus whole-production rules, every error at once
    sources    Act sources and Stage lock files read from the build machine
    model      frozen, typed objects
    render     model -> file contents through the targets' templates, and the host's plan
    artifact   the agent and manifest added; written read-only under its tree hash

layout (names and places) and schema (the schema document) serve several phases.
"""
