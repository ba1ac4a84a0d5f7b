"""The subcommands of ``fastformer-bench``, one module each, all with the same interface:

- ``NAME``: the subcommand as typed (``run``), and ``HELP``: its line in ``fastformer-bench --help``;
- ``add_arguments(parser)``: its options, on the subparser ``cli.build_parser`` gives it;
- ``main(args) -> int``: its handler, given the parsed options; the exit code (0 done, 1 a check failed). A
  request that cannot mean anything raises ValueError with one sentence: cli.main turns it into exit 2.

A new subcommand is a module here and one line in ``cli.COMMANDS``.
"""
