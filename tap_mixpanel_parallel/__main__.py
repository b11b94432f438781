"""`python -m tap_mixpanel_parallel`: the same CLI as the `tap-mixpanel-parallel` script."""

from tap_mixpanel_parallel.tap import TapMixpanelParallel

if __name__ == "__main__":
    TapMixpanelParallel.cli()
