"""The application layer: `python -m backend COMMAND` (one module per command, each with ``configure(parser)``
and ``run(args)``), the stdio server the add-on talks to, the demo and the benchmarks. Nothing below imports it."""
