"""What ``lsml-tui run`` tells the script it starts, through its environment, and what the
script's ``lsml_tui.watch`` reads: the run directory to record in, and lsml-tui's pid to
follow (the script ends when it is gone). No torch here: the command line imports it."""

ENV_RUN_DIR = "LSML_TUI_RUN_DIR"
ENV_PARENT = "LSML_TUI_PARENT"
