"""Local stand-ins for the parts this machine does not have.

Slack's Web API, a Kubernetes API server and plain HTTP services (health,
maintenance, status page) each get a small server here that
speaks the real wire format on a free port of 127.0.0.1, records what it
received and can be told to fail. The tests and `rollback-bot demo` use the
same ones, so the production client code runs unchanged against them. Docker
has no stand-in: its tests run a real private dockerd (tests/fakes/dockerd.py).
"""
