"""The Dagster code location: `dagster dev -m orchestration.definitions` loads it.

The settings are read from the environment here, once, when the code location is loaded (ZOO_SHARDS sets the
describe/embed partitions); everything below is built from them.
"""

from config import Settings
from orchestration.location import zoo_definitions
from orchestration.resources import zoo_resources

settings = Settings.from_env()
defs = zoo_definitions(settings, resources=zoo_resources(settings, secrets_as_env_vars=True))
