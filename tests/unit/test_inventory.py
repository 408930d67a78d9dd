import tomllib
from pathlib import Path

import pytest

from clusterbak.config import load_inventory
from clusterbak.errors import InventoryError
from clusterbak.model.inventory import parse_inventory
from clusterbak.model.topology import parse_cluster_nodes

EXAMPLE = '''
[redis]
username = "default"
password_env = "REDISCLI_AUTH"

[defaults]
transport = "ssh"
ssh_user = "redis"
ssh_port = 22
restart_command = "sudo systemctl restart redis-server@{port}"
stop_command = "sudo systemctl stop redis-server@{port}"
start_command = "sudo systemctl start redis-server@{port}"

[nodes."10.0.0.1:6379"]
ssh_host = "redis-a.internal"
data_dir = "/var/lib/redis/6379"

[nodes."10.0.0.2:6379"]
transport = "docker"
container = "redis-b"
'''


def test_example_parses_and_merges_defaults():
    inv = parse_inventory(tomllib.loads(EXAMPLE), "inv.toml")
    a = inv.access("10.0.0.1:6379")
    assert (a.transport, a.ssh_user, a.ssh_host, a.data_dir) == (
        "ssh",
        "redis",
        "redis-a.internal",
        "/var/lib/redis/6379",
    )
    assert a.command("restart_command") == "sudo systemctl restart redis-server@6379"
    b = inv.access("10.0.0.2:6379")
    assert (b.transport, b.container) == ("docker", "redis-b")
    assert inv.username == "default" and inv.password_env == "REDISCLI_AUTH"


@pytest.mark.parametrize("text,needle", [
    ('[defaults]\ntransprt = "ssh"\n', "unknown key 'transprt' in [defaults]"),
    ('[nodes."10.0.0.1:6379"]\nsh_host = "x"\n', "unknown key 'sh_host'"),
    ('[defaults]\ntransport = "ftp"\n', "transport 'ftp'"),
    ('[defaults]\nssh_port = "22"\n', "ssh_port must be a port number"),
    ('[defaults]\nrestart_command = "restart {hostname}"\n', "unknown placeholder {hostname}"),
    ('[nodes."redis-a"]\n', "is not an address host:port"),
    ('[nodes."10.0.0.1:6379"]\ntransport = "docker"\n', "sets no container"),
    ('[redis]\npassword = "x"\n', "unknown key 'password'"),
    ('extra = 1\n', "unknown key 'extra' in top level"),
])
def test_bad_inventories_name_the_key(text, needle):
    with pytest.raises(InventoryError) as info:
        parse_inventory(tomllib.loads(text), "inv.toml")
    assert needle in str(info.value) and "inv.toml" in str(info.value)


def test_node_the_inventory_cannot_place_is_named():
    golden = Path(__file__).parent / "golden" / "nodes_3x1.txt"
    topo = parse_cluster_nodes(golden.read_text())
    inv = parse_inventory(tomllib.loads('[nodes."127.0.0.1:7100"]\n'), "inv.toml")
    with pytest.raises(InventoryError) as info:
        for node in topo.nodes:
            inv.access(node.address, "is in the cluster")
    assert "127.0.0.1:71" in str(info.value) and "[nodes." in str(info.value)


def test_missing_key_file_and_bad_toml(tmp_path):
    path = tmp_path / "inv.toml"
    path.write_text('[defaults]\ntransport = "ssh"\nssh_key = "%s"\n[nodes."127.0.0.1:7000"]\n' % (tmp_path / "nokey"))
    with pytest.raises(InventoryError, match="ssh_key .*nokey does not exist"):
        load_inventory(path)
    path.write_text("[defaults\n")
    with pytest.raises(InventoryError, match="not valid TOML"):
        load_inventory(path)
    with pytest.raises(InventoryError, match="does not exist"):
        load_inventory(tmp_path / "missing.toml")


def test_inventory_toml_is_read_back_as_written():
    from clusterbak.model.inventory import inventory_toml

    text = inventory_toml(["a comment", ""], {"transport": "ssh", "ssh_port": 2222, "ssh_user": 'r"e\\dis'},
                          {"10.0.0.1:6379": {"data_dir": "/data/ü dir", "ssh_host": "10.0.0.1"},
                           "10.0.0.2:6379": {"data_dir": "/data"}})
    assert text.startswith("# a comment\n#\n\n[defaults]\n")
    inv = parse_inventory(tomllib.loads(text), "inv.toml")
    assert inv.access("10.0.0.1:6379").data_dir == "/data/ü dir"
    assert inv.access("10.0.0.1:6379").ssh_port == 2222 and inv.access("10.0.0.2:6379").ssh_user == 'r"e\\dis'
