#!/usr/bin/env bash
# System packages the test suite wants: a Vulkan loader and Mesa's CPU Vulkan driver
# (llvmpipe), so wgpu has an adapter on machines without a GPU. Installs them when running
# as root with apt-get (CI); otherwise only says what is missing (wgpu tests then skip).
set -u
have_icd() { compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null || compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null; }
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
# Vulkan (wgpu's main adapter) and EGL (its OpenGL adapter, which the notebooks list too)
if have_icd && have_lib libvulkan.so.1 && have_lib libEGL_mesa.so.0; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "sysdeps: installing Mesa Vulkan + EGL drivers (CPU WebGPU adapters for wgpu)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
else
  echo "sysdeps: no Vulkan driver found; wgpu tests will be skipped."
  echo "         fix: sudo apt-get install mesa-vulkan-drivers libvulkan1"
fi
exit 0
