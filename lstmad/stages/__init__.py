"""The pipeline's stages, in the order of the data flow: what jobs/, dags/ and the CLI call.

    generate (synthetic farm) → prepare → train → promote → score → drift → (retrain) ; maintain weekly

Each stage reads its inputs from the pipeline home (lstmad.layout.Paths), writes its outputs there and returns
a summary dict; tracking happens in the stages, never inside transforms, detectors or the training loop.
"""

from lstmad.stages.drift import drift, retrain_needed
from lstmad.stages.maintain import maintain
from lstmad.stages.prepare import generate, prepare, prepare_training_data
from lstmad.stages.promote import promote_model
from lstmad.stages.score import score, score_range
from lstmad.stages.train import train, training_window

__all__ = ["generate", "prepare", "prepare_training_data", "train", "training_window", "promote_model", "score",
           "score_range", "drift", "retrain_needed", "maintain"]
