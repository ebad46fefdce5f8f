"""Imports every model and front-end module so that their registrations run."""

from audiointerp.models import archisound, beats, clap, dymn, passt, small_cnn, yamnet  # noqa: F401
from audiointerp.models.efficientat import EfficientATMel
from audiointerp.models.frontends import LogMel
from audiointerp.models.registry import register_frontend
from audiointerp.models.vggish import VGGishFrontend

register_frontend("logmel")(LogMel)
register_frontend("vggish")(VGGishFrontend)
register_frontend("efficientat_mel")(EfficientATMel)
