"""The agent's token: from --token, else $NANO_AGENT_TOKEN, else generated once and kept in the
agent's config file (mode 0600). Python 3.6 compatible, standard library only."""
import binascii
import json
import os

DEFAULT_CONFIG = os.path.join("~", ".config", "nano_agent", "config.json")
TOKEN_ENV = "NANO_AGENT_TOKEN"


class ConfigError(RuntimeError):
    pass


def new_token():
    return binascii.hexlify(os.urandom(16)).decode("ascii")


def load_config(path):
    try:
        with open(path, "r") as f:
            config = json.load(f)
    except ValueError as e:
        raise ConfigError("config file {} is not valid JSON: {}".format(path, e))
    if not isinstance(config, dict):
        raise ConfigError("config file {} must hold a JSON object".format(path))
    return config


def _write_private(path, config):
    """Write the config atomically, readable by its owner only."""
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700)
    tmp = path + ".tmp"
    if os.path.exists(tmp):
        os.remove(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def resolve_token(token=None, config_path=None, environ=None):
    """(token, where it came from). Generates and stores a token when none is given anywhere."""
    environ = os.environ if environ is None else environ
    if token:
        return token, "command line"
    if environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV], "$" + TOKEN_ENV
    path = os.path.expanduser(config_path or DEFAULT_CONFIG)
    config = load_config(path) if os.path.exists(path) else {}
    if config.get("token"):
        if not isinstance(config["token"], str):
            raise ConfigError("token in {} must be a string".format(path))
        return config["token"], path
    config["token"] = new_token()
    _write_private(path, config)
    return config["token"], path + " (generated)"
