# -*- test-case-name: tests.test_agent_service -*-
"""
The agent's status endpoint: C{GET /_status} is 200 while the agent is
connected and converged, 503 otherwise, with a JSON body either way;
C{GET /metrics} serves its Prometheus metrics.
"""

import json

from klein import Klein

from p2twisted.metrics import metricsResource


class StatusResource(object):
    """
    Serves an L{AgentService}'s status.
    """

    app = Klein()

    def __init__(self, agent):
        self.agent = agent

    @app.route("/_status", methods=["GET"])
    def status(self, request):
        record = self.agent.statusRecord()
        request.setResponseCode(200 if record["converged"] else 503)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(record, sort_keys=True, indent=2).encode() + b"\n"

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request):
        return metricsResource(self.agent.metrics)

    def resource(self):
        return self.app.resource()
