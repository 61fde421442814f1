"""The ArchSpec format: built-ins, lossless round trip, validation."""

import pytest
import yaml

from nasseg import arch
from nasseg.arch.spec import ArchSpec, CellGenotype, parse_arch
from nasseg.errors import SpecError


def test_builtin_darts_v2_matches_reference():
    spec = arch.load("darts_v2")
    normal = spec.cells["normal"].nodes
    assert normal[2] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
    assert normal[5] == (("skip_connect", 0), ("dil_conv_3x3", 2))
    assert spec.cells["reduce"].nodes[3] == (("skip_connect", 2), ("max_pool_3x3", 1))
    assert spec.cells["normal"].concat == (2, 3, 4, 5) and spec.path is None


def test_builtin_autodeeplab_path_and_cell():
    spec = arch.load("autodeeplab")
    assert spec.path == (4, 4, 4, 8, 16, 8, 16, 16, 32, 32, 16, 8)
    assert spec.cells["normal"].nodes[6] == (("sep_conv_5x5", 3), ("atrous_conv_5x5", 5))


@pytest.mark.parametrize("name", ["darts_v2", "autodeeplab"])
def test_round_trip_is_lossless(tmp_path, name):
    spec = arch.load(name)
    path = spec.save(tmp_path / "arch.yaml")
    again = arch.load(path)
    assert again == spec and again.to_yaml() == spec.to_yaml()


def test_round_trip_keeps_meta_and_unusual_cells(tmp_path):
    spec = ArchSpec("custom", {"normal": CellGenotype(1, {1: (("conv_3x3", 0),), 2: (("skip_connect", 1),
                                                                                   ("none", 0))}, (2,))},
                    path=(8, 16, 16), space="mine", meta={"epoch": 7, "lambda": 0.25})
    assert arch.load(spec.save(tmp_path / "a.yaml")) == spec


def bad(data):
    with pytest.raises(SpecError) as info:
        parse_arch(data, "arch.yaml")
    return str(info.value)


def test_validation_messages():
    base = yaml.safe_load(arch.load("darts_v2").to_yaml())
    data = yaml.safe_load(yaml.safe_dump(base))
    data["cells"]["normal"]["nodes"][2][0][0] = "sep_conv3x3"
    assert bad(data) == ("arch.yaml: cells.normal.nodes.2[0]: unknown op 'sep_conv3x3' "
                         "(did you mean 'sep_conv_3x3'?)")
    data = yaml.safe_load(yaml.safe_dump(base))
    data["cells"]["normal"]["nodes"][3][0][1] = 4
    assert "cells.normal.nodes.3[0]: input 4 is not an earlier node" in bad(data)
    data = yaml.safe_load(yaml.safe_dump(base))
    data["cells"]["normal"]["concat"] = [2, 3, 9]
    assert "cells.normal.concat[2]: 9 is not an intermediate node" in bad(data)
    data = yaml.safe_load(yaml.safe_dump(base))
    data["path"] = [4, 4, 16]
    assert "path[2]: stride 16 after 4: a layer may move at most one level" in bad(data)
    data = yaml.safe_load(yaml.safe_dump(base))
    data["celss"] = data.pop("cells")
    assert "cells: missing" in bad(data)
