"""Differentiable rendering in plain torch: the rasterizer (:mod:`.rasterize`), SH shading (:mod:`.shading`) and
textured mesh rendering (:mod:`.renderer`), used by training and by rendered test clips."""
