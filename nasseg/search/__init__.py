"""The search engine (runs without Ray): DARTS 1st/2nd order, Auto-DeepLab, Hessian early stopping."""

from __future__ import annotations

from pathlib import Path

from ..arch import load_arch
from ..arch.decode import decode_from_arrays
from ..errors import NassegError, SpecError
from ..rundirs import run_path
from .config import SearchConfig, load_job, parse_job
from .loop import Search, SearchDiverged, SearchResult
from .rundir import RunDir


def run_dir_for(config: SearchConfig, seed: int, out: str | Path = "runs") -> Path:
    """Where one seed of a job writes: OUT/<job name>/seed<seed> (the name a plain folder name)."""
    return run_path(out, config.name) / f"seed{seed}"


def decode_run(run_dir: str | Path, epoch: int | None = None):
    """The ArchSpec of a run at ``epoch`` (default: the search's answer, else the last epoch)."""
    run = RunDir(run_dir)
    epochs = run.epochs_recorded()
    if not epochs:
        raise NassegError(f"{run_dir}: no recorded epochs (alphas/epoch_*.json); is this a search run directory?")
    if epoch is None:
        if run.file("arch.yaml").exists():
            return load_arch(run.file("arch.yaml"))
        epoch = epochs[-1]
    if epoch not in epochs:
        raise NassegError(f"{run_dir}: epoch {epoch} was not recorded; recorded epochs: {epochs[0]}..{epochs[-1]}")
    weights = run.read_arch_weights(epoch)
    if not run.file("space.yaml").is_file():
        raise NassegError(f"{run_dir}: no space.yaml (the search space of the run), needed to decode epoch {epoch}")
    try:
        return decode_from_arrays(run.file("space.yaml"), weights["alphas_raw"], weights["betas_raw"],
                                  name=f"{Path(run_dir).name}_epoch{epoch}", meta={"epoch": epoch})
    except SpecError:
        raise  # names space.yaml already
    except (NassegError, TypeError, ValueError, AttributeError) as e:  # weights that do not fit the space
        raise NassegError(f"{run.epoch_file('alphas', epoch, '.json')}: cannot decode these architecture "
                          f"weights ({' '.join(str(e).split())[:200]})") from None


__all__ = ["SearchConfig", "load_job", "parse_job", "Search", "SearchDiverged", "SearchResult",
           "run_dir_for", "decode_run"]
