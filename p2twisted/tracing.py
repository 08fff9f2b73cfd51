# -*- test-case-name: tests.test_agent_worker,tests.test_orchestrate_farm,tests.test_presence -*-
"""
The C{state} and C{tracer} of an object whose lifecycle is an automat
L{MethodicalMachine} (the pod worker, the farm, presence).
"""


class TracedMachine(object):
    """
    Keeps C{self.state} as the machine's state (without automat's
    underscores) and tells C{self.tracer}, if set, of every transition.

    A class mixing it in sets, in its body, C{_setTrace =
    _machine._setTrace} (automat's tracer hook is a descriptor of the class
    holding the machine), and calls L{_traceTransitions} at the end of its
    C{__init__}, after setting its initial C{state}.
    """

    #: Called with C{(state, input, new state)} at every transition.
    tracer = None

    def _traceTransitions(self):
        self._setTrace(self._transition)

    def _transition(self, old, event, new):
        self.state = new.strip("_")
        if self.tracer is not None:
            self.tracer(old.strip("_"), event.strip("_"), self.state)
