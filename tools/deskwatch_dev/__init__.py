"""Development tools that nothing installs: throwaway brokers and databases, the demo,
the fleet simulator and load tool, the delivery benchmark.

``make demo`` and the tests put ``tools/`` on ``sys.path``; no distribution ships this.
"""
