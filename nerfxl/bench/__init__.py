"""Studies that train several runs and compare them (``nerfxl bench ...``)."""
