"""Command-line interface. Each subcommand lives in its own module with add_arguments(parser) and run(args)."""
