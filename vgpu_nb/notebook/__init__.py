"""The notebook layer: ``%vgpu`` magics (:mod:`.magics`). It only uses the public API and
subscribes to the telemetry bus; nothing below imports it."""
