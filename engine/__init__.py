"""Rosetta's plain-Python data plane: no Django, no Celery, no app imports except the
writer contract. The apps load configuration, call it, and record the outcome."""
