"""The command line: thin, it parses input, calls the shop and renders output."""
