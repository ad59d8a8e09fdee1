"""efbench: simulated distributed optimization with compression and error compensation."""

__version__ = "0.1.0"


def _expose_sweeper_plugin() -> None:
    """Make Hydra's plugin scan (pkgutil over ``hydra_plugins.__path__``) see the efbench
    sweeper in an editable install too: setuptools' editable finder imports it but hides
    it from pkgutil. A regular install already has it in site-packages/hydra_plugins."""
    from pathlib import Path

    import hydra_plugins

    here = str(Path(__file__).resolve().parents[1] / "hydra_plugins")
    if Path(here, "efbench_sweeper").is_dir() and here not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(here)


_expose_sweeper_plugin()
