# The WAL monitoring models arrive with the WAL monitoring issue.
