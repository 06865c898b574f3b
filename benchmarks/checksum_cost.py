"""Cost of checkpoint checksums: sha256 manifest write and verify vs the orbax save itself.

python -m benchmarks.checksum_cost   (prints one line per state; median of 5 of each)
"""

import statistics
import tempfile
import time

from configs import fashion_mnist_mlp, fashion_mnist_resnet
from widesparse_jax import checkpoint, data, integrity, setup
from widesparse_jax import config as config_lib


def _state(c):
    c = config_lib.resolve_config(c)
    run = setup.build_run(c, data.dataset_info(data.DataSpec.from_config(c.dataset)))
    return c, setup.state_to_dict(setup.init_state(run))


def _median_ms(fn, n=5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def measure(name: str, c) -> None:
    c, state = _state(c)
    with tempfile.TemporaryDirectory() as wd:
        ck = checkpoint.Checkpointer(wd, config_lib.run_fingerprint(c), max_to_keep=10)
        steps = iter(range(1, 100))
        save_ms = _median_ms(lambda: ck.save(next(steps), state, {}))
        step_dir = ck.step_dir(ck.latest_step())
        size = sum(v["bytes"] for v in integrity.digests(step_dir).values())
        write_ms = _median_ms(lambda: integrity.write_manifest(step_dir))
        verify_ms = _median_ms(lambda: integrity.verify(step_dir))
        ck.close()
    print(
        f"{name}: {size / 2**20:.2f} MiB on disk; orbax save (incl. manifest) {save_ms:.0f} ms, "
        f"manifest write {write_ms:.1f} ms, verify {verify_ms:.1f} ms"
    )


if __name__ == "__main__":
    measure("MLP fashion_mnist_mlp (width 512, base 64)", fashion_mnist_mlp.get_config())
    measure("ResNet-18 width 16 (fashion_mnist_resnet)", fashion_mnist_resnet.get_config())
    c = fashion_mnist_resnet.get_config()
    c.model.width, c.model.base_width = 64, 16
    measure("ResNet-18 width 64 (base 16)", c)
