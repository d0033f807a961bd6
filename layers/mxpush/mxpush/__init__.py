"""mxpush: a serverless Matrix push gateway.

The shared package used by every Lambda handler (shipped as a layer) and by local mode.
Domain modules never create AWS clients; they receive a store, a scheduler and a clock.
"""

__version__ = "0.1.0"
