"""What a caller asked for and the engine cannot run is a ConfigError (a ValueError), the one type
the CLI reports in one line without a traceback."""
import pytest

from tests.helpers.engine import MODELS_DIR
from trtx.engine import LLM
from trtx.engine.checkpoint import CheckpointError
from trtx.engine.config import ModelConfig
from trtx.engine.errors import ConfigError
from trtx.engine.parallel import check_layout

MODEL = MODELS_DIR / "tiny-arith"


def test_config_and_checkpoint_errors_are_config_errors():
    from trtx.engine import config
    assert config.ConfigError is ConfigError and issubclass(CheckpointError, ConfigError)
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("tp,pp,adp,message", [(3, 1, False, "tp size 3"), (1, 5, False, "larger than the model's 4"),
                                               (2, 2, True, "attention data parallelism runs on one")])
def test_a_split_the_model_cannot_take(tp, pp, adp, message):
    with pytest.raises(ConfigError, match=message):
        check_layout(ModelConfig.from_dir(MODEL), tp, pp, adp)
    with pytest.raises(ConfigError, match=message):      # refused before any process group exists
        LLM(MODEL, tensor_parallel_size=tp, pipeline_parallel_size=pp, attention_dp=adp)


def test_mtp_options_the_model_cannot_take():
    with pytest.raises(ConfigError, match="between 0 and 8"):
        LLM(MODEL, mtp_nextn=9)
