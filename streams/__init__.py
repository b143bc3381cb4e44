"""Faust application, agents, topics, broker glue and the ``coordwatch`` command."""
