"""The service layer: what a command or a request does, for every face (issue 11).

The faces (`cli/`, later `api/`) parse input, call one function here or on the `Shop` facade,
and render; they import nothing of `fleet/`, `jobs/`, `store/`, `providers/`, `ssh/` or
`recipes/` (tests/unit/test_layers.py). What they show of the domain's records comes through
`gpushop.service.types`.
"""
