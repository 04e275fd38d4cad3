"""Remote jobs on the device: config changes, model updates, software updates.

The document format is the contract's (``deskwatch_contract.jobs``). Who does what:

- :mod:`.agent` runs inside the daemon (unprivileged): it takes the signed envelope from
  ``jobs/notify``, verifies signature, expiry and target, publishes progress, runs model
  jobs itself (a new models directory under the state directory, hot-swapped after a
  selftest), and queues config and software jobs in ``<state_dir>/jobs/queue/``;
- :mod:`.executor` runs as root (``deskwatch jobs run-queued``, started by
  ``deskwatch-jobs.path``): it verifies the signature again, and that the job is
  addressed to the device its config names and has not run here before (:mod:`.ledger`),
  applies a config change (:mod:`.config_change`) or installs a software update
  (``deskwatch.update``), and writes the outcome to ``<state_dir>/jobs/done/``, which the
  agent publishes.
"""
