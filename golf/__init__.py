"""golf: parameter-golf language modelling — the records' techniques as tested pieces, with kernels."""

__version__ = "0.1.0"
