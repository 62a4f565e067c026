"""The eexit code location: every asset, check, resource and the executor, in one place."""

import dagster as dg

from assets import ASSET_MODULES
from eexit_core.settings import Environment
from pipelines.deployment import executor_for, resources_for

_ENV = Environment.read()

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(ASSET_MODULES),
    asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
    resources=resources_for(_ENV),
    executor=executor_for(_ENV),
)
