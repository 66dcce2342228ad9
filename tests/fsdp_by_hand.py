"""accelerate's FSDP2 `prepare`, made by hand on the CPU, where accelerate itself never shards: torch's
fully_shard on each decoder layer (the model's `_no_split_modules`, as accelerate's auto-wrap policy picks them),
then on the root, and the optimizer's weights switched to the shards (accelerate's
fsdp2_switch_optimizer_parameters). For tests/fsdp_worker.py, tests/fsdp_selfplay_worker.py and
bench/selfplay_lora_memory.py:
`Accelerator.prepare = sharding_prepare(record)`, in processes that torch.distributed.run started."""

from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor


def shard(policy, mesh, **options) -> None:
    """FSDP2 over the engine's `PolicyLogps` as accelerate applies it: each decoder layer, then the root
    (`options`: fully_shard's, as accelerate passes them from its plugin)."""
    units = set(getattr(policy.model, "_no_split_modules", None) or ["LlamaDecoderLayer"])
    for layer in [m for m in policy.modules() if type(m).__name__ in units]:
        fully_shard(layer, mesh=mesh, **options)
    fully_shard(policy, mesh=mesh, **options)


def sharding_prepare(record: list | None = None):
    """A replacement for `Accelerator.prepare(policy, optimizer)`; each call appends to `record` the share of every
    sharded weight that this process holds."""

    def prepare(self, policy, optimizer):
        shard(policy, init_device_mesh("cpu", (self.num_processes,)))
        if record is not None:
            record.append({n: p.to_local().numel() / p.numel() for n, p in policy.named_parameters()
                           if isinstance(p, DTensor)})
        (group,) = optimizer.param_groups
        group["params"] = [p for p in policy.parameters() if p.requires_grad]
        return policy, optimizer

    return prepare
