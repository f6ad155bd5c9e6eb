import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

import pytest

from anobench.config import apply_overrides, config_from_dict, config_hash, config_to_dict, parse_overrides
from anobench.errors import AnobenchError


@dataclass
class Cfg:
    steps: int = 10
    strength: float = 0.5
    mode: Literal["a", "b"] = "a"
    pair: tuple[float, float] = (0.0, 1.0)
    name: Optional[str] = None
    flag: bool = False


def test_overrides_are_typed():
    cfg = apply_overrides(Cfg(), parse_overrides(["steps=20", "strength=1", "mode=b", "pair=0.1,0.9", "flag=true"]))
    assert cfg == Cfg(steps=20, strength=1.0, mode="b", pair=(0.1, 0.9), flag=True)
    assert isinstance(cfg.strength, float)


@pytest.mark.parametrize("pair", ["nosuch=1", "steps=1.5", "mode=c", "pair=1,2,3", "flag=maybe", "steps"])
def test_bad_overrides_name_the_key(pair):
    with pytest.raises(AnobenchError) as err:
        apply_overrides(Cfg(), parse_overrides([pair]))
    assert pair.split("=")[0] in str(err.value)
    assert "\n" not in str(err.value)


def test_dict_round_trip_and_hash():
    cfg = Cfg(steps=3, pair=(0.2, 0.4), name="x")
    data = config_to_dict(cfg)
    assert config_from_dict(Cfg, data) == cfg
    assert config_hash(cfg) == config_hash(config_from_dict(Cfg, data))
    assert config_hash(cfg) != config_hash(Cfg())
    with pytest.raises(AnobenchError):
        config_from_dict(Cfg, {**data, "extra": 1})


@dataclass
class TextCfg:
    prompt: str = "x"
    label: Optional[str] = None
    sizes: tuple[int, ...] = (1,)
    weights: list[float] = dataclasses.field(default_factory=list)
    mode: Literal["1", "2"] = "1"


@pytest.mark.parametrize("raw", ["a, b, c", "true", "12", "null value", " spaced ", "[1]"])
def test_text_fields_keep_their_text_verbatim(raw):
    cfg = apply_overrides(TextCfg(), parse_overrides([f"prompt={raw}", f"label={raw}"]))
    assert cfg.prompt == raw and cfg.label == raw


def test_overrides_convert_by_field_type():
    cfg = apply_overrides(TextCfg(), parse_overrides(["sizes=4,8", "weights=[0.5, 1]", "mode=2", "label=none"]))
    assert cfg.sizes == (4, 8) and cfg.weights == [0.5, 1.0] and cfg.mode == "2" and cfg.label is None
    with pytest.raises(AnobenchError, match="sizes"):
        apply_overrides(TextCfg(), parse_overrides(["sizes=4,x"]))
    with pytest.raises(AnobenchError, match="finite"):
        apply_overrides(Cfg(), parse_overrides(["strength=1e400"]))
