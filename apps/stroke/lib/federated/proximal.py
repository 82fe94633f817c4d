"""FedProx at a site: the task's own loss plus NVFlare's proximal term (``PTFedProxLoss``),
mu/2 * ||w - w_global||^2 over the network's parameters (Li et al. 2020, "Federated optimization in
heterogeneous networks", eq. 2), which keeps a site's local training near the global model it received.

Only this wrapper is written here: NVFlare ships the term, and MONAI's SupervisedTrainer calls its
``loss_function(pred, label)`` with the prediction only, so the term, which needs the networks, rides
along the task's loss.
"""

from __future__ import annotations

import copy

import torch


class ProximalLoss(torch.nn.Module):
    """``loss(pred, label) + PTFedProxLoss(mu)(network, global_network)``; ``global_network`` is a frozen copy
    of the network holding the global model's weights (the snapshot a FedProx client takes at each round)."""

    def __init__(self, loss: torch.nn.Module, network: torch.nn.Module, global_state: dict, mu: float):
        from nvflare.app_opt.pt.fedproxloss import PTFedProxLoss

        super().__init__()
        self.loss = loss
        self.proximal = PTFedProxLoss(mu=mu)
        # plain attributes, not submodules: the trained network stays the engine's, the snapshot never trains
        self.__dict__["network"] = network
        snapshot = copy.deepcopy(network)
        snapshot.load_state_dict(global_state)
        for parameter in snapshot.parameters():
            parameter.requires_grad_(False)
        self.__dict__["global_network"] = snapshot

    def forward(self, pred, target):
        return self.loss(pred, target) + self.proximal(self.network, self.global_network)
