"""Everything that trains: models, data, optimizers, the loop, the run store.

Modules the UI process needs (``config``, ``specs``, ``commands``, ``events``,
``store``) never import torch.
"""
