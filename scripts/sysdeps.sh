#!/usr/bin/env bash
# System packages the test suite wants: a Vulkan loader and Mesa's CPU Vulkan driver
# (llvmpipe), so wgpu has an adapter on machines without a GPU, and Chromium, the browser
# of the end-to-end test (tests/e2e, driven by Playwright; never a downloaded browser).
# Installs what is missing when running as root with apt-get (CI); otherwise only says what
# is missing (the wgpu tests, or the e2e test, then skip).
set -u
have_icd() { compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null || compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null; }
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
need=()
# Vulkan (wgpu's main adapter) and EGL (its OpenGL adapter, which the notebooks list too)
if ! { have_icd && have_lib libvulkan.so.1 && have_lib libEGL_mesa.so.0; }; then
  need+=(mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 libgl1-mesa-dri)
fi
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  need+=(chromium)
fi
[ ${#need[@]} -eq 0 ] && exit 0  # all there: no apt-get at all
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "sysdeps: installing ${need[*]} (CPU WebGPU adapters for wgpu / the e2e test's browser)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  case " ${need[*]} " in *" libvulkan1 "*)
    echo "sysdeps: no Vulkan driver found; wgpu tests will be skipped."
    echo "         fix: sudo apt-get install mesa-vulkan-drivers libvulkan1" ;;
  esac
  case " ${need[*]} " in *" chromium "*)
    echo "sysdeps: no chromium found; the browser end-to-end test (tests/e2e) will be skipped."
    echo "         fix: sudo apt-get install chromium" ;;
  esac
fi
exit 0
