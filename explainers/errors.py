"""Errors a user can cause. Each message names what was expected and what came instead."""


class SaliencyError(ValueError):
    """Base class for every error the backend raises on bad input; the UI shows these without a traceback."""


class ModelUnavailableError(SaliencyError):
    """A model's weights cannot be had: not cached and no network, or an unknown model name."""


class UnknownMethodError(SaliencyError):
    """No method is registered under that name."""


class TargetError(SaliencyError):
    """A target class that does not exist, is ambiguous, or does not fit the batch."""


class LayerError(SaliencyError):
    """A layer that does not exist, is not spatial, or does not fit the method."""


class ParameterError(SaliencyError):
    """A method parameter of the wrong type or out of its declared range."""


class PreprocessingNeeded(ParameterError):
    """A pixel-space choice (IG's black baseline) asked of a bare module, whose preprocessing is unknown: pass the
    ModelBundle."""


class InputError(SaliencyError):
    """An input that cannot be used: an image unreadable, damaged, unsafe or outside the accepted formats; a text
    that is empty or that the tokenizer makes nothing of."""


class ModelLoadError(SaliencyError):
    """A user's model file that cannot be loaded safely: unsafe, damaged, or not matching the architecture."""


class ModelOutputError(SaliencyError):
    """A model whose output is NaN or infinite: its weights are broken, so nothing it says can be explained."""


ImageError = InputError  # the earlier name, kept for callers that catch it


class Cancelled(Exception):
    """Raised (or caused by a progress callback returning False) to stop a multi-pass method cleanly."""
