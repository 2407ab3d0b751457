"""The command line: one module per verb; main.py parses, commands.py dispatches."""
