"""Everything a person sees: the command line, the dashboard, the reports."""
