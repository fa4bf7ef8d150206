"""Configuration: attrs models, strict TOML loading with cattrs, the store (SQLite or PostgreSQL)."""

from .errors import AlreadyExistsError as AlreadyExistsError
from .errors import ConfigError as ConfigError
from .errors import NotFoundError as NotFoundError
from .errors import SchemaVersionError as SchemaVersionError
from .errors import StoreError as StoreError
from .errors import StoreUnavailableError as StoreUnavailableError
from .loading import declared_projects as declared_projects
from .loading import default_config_path as default_config_path
from .loading import load_config as load_config
from .loading import parse_server as parse_server
from .loading import projects_from_store as projects_from_store
from .loading import redacted_spec as redacted_spec
from .loading import server_spec as server_spec
from .models import Config as Config
from .models import GatewaySettings as GatewaySettings
from .models import ProjectConfig as ProjectConfig
from .models import RestartPolicy as RestartPolicy
from .models import ServerConfig as ServerConfig
from .models import expand_env as expand_env
from .store import InstanceRow as InstanceRow
from .store import KeyInfo as KeyInfo
from .store import Store as Store
from .store import open_store as open_store
