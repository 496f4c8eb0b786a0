#!/usr/bin/env bash
# System packages the test suite wants: a Vulkan loader and Mesa's CPU Vulkan driver
# (llvmpipe), so wgpu has an adapter on machines without a GPU. Installs them when running
# as root with apt-get (CI); otherwise only says what is missing (wgpu tests then skip).
set -u
have_icd() { ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; }
have_loader() { ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; }
if have_icd && have_loader; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "sysdeps: installing mesa-vulkan-drivers libvulkan1 (CPU WebGPU adapter for wgpu)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
else
  echo "sysdeps: no Vulkan driver found; wgpu tests will be skipped."
  echo "         fix: sudo apt-get install mesa-vulkan-drivers libvulkan1"
fi
exit 0
