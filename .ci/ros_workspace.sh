#!/usr/bin/env bash
# Builds (or reuses) a minimal ROS 2 Humble core from ../shared/ros2 and a colcon workspace with
# this checkout's hmdiff_msgs + hmdiff_ros on top, then writes an environment file to source:
#
#   bash .ci/ros_workspace.sh [ROS2_SOURCES_DIR]   # prints the path of the env file
#   source "$(bash .ci/ros_workspace.sh)"          # then: python -m pytest -q tests
#
# The core is built once per source tarball (keyed by its hash) into
# ${HMDIFF_ROS2_CACHE:-~/.cache/hmdiff_ros/ros2}/humble-<hash>/ (about 7 minutes on 2 cores);
# the workspace (a few seconds) is rebuilt on every call. The Debian packages the build needs
# are installed when missing (as root, with apt-get); what cannot be had is reported on stderr
# and the script exits non-zero: the ROS tests then skip with their reason.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
sources=${1:-$repo/../shared/ros2}
tarball=$sources/humble-core-src.tar.gz
say() { echo "ros_workspace: $*" >&2; }
if [ ! -f "$tarball" ]; then
  say "no ROS 2 sources at $tarball: nothing built"
  exit 3
fi

# Debian packages named in the tarball's build.sh, plus lark for launch
packages=(colcon python3-colcon-ros python3-colcon-bash python3-colcon-cmake python3-colcon-core
  python3-colcon-defaults python3-colcon-library-path python3-colcon-metadata
  python3-colcon-output python3-colcon-package-information python3-colcon-package-selection
  python3-colcon-parallel-executor python3-colcon-pkg-config python3-colcon-python-setup-py
  python3-colcon-recursive-crawl python3-colcon-test-result python3-colcon-argcomplete
  cyclonedds-dev python3-empy python3-lark libspdlog-dev pybind11-dev python3-numpy
  python3-catkin-pkg python3-netifaces python3-yaml python3-pytest python3-setuptools
  python3-dev python3-psutil python3-packaging libconsole-bridge-dev libyaml-dev
  cmake g++ make git pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get > /dev/null; then
    say "missing Debian packages and no root apt-get to install them: ${missing[*]}"
    exit 4
  fi
  say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"; } > /dev/null 2>&1; then
    say "apt-get could not install: ${missing[*]}"
    exit 4
  fi
fi

cache=${HMDIFF_ROS2_CACHE:-$HOME/.cache/hmdiff_ros/ros2}
key=$(sha256sum "$tarball" | cut -c1-16)
core=$cache/humble-$key
if [ ! -f "$core/install/setup.bash" ]; then
  partial=$core.partial
  rm -rf "$partial" && mkdir -p "$partial"
  tar xzf "$tarball" -C "$partial"
  say "building the ROS 2 core into $core (about 7 minutes on 2 cores; log: $core.log)"
  if ! ROOT="$partial" bash "$partial/build.sh" > "$core.log" 2>&1; then
    say "the ROS 2 core did not build; the end of $core.log:"
    tail -n 20 "$core.log" >&2
    exit 5
  fi
  rm -rf "$partial/build" "$partial/log"  # keep src and install: 60 MB
  rm -rf "$core" && mv "$partial" "$core"
fi

# the workspace: this checkout's two packages, built with the core's (Debian's) Python
ws=$cache/ws-$(printf '%s' "$repo" | sha256sum | cut -c1-12)
rm -rf "$ws" && mkdir -p "$ws/src"
ln -s "$repo/msg" "$ws/src/hmdiff_msgs"
ln -s "$repo" "$ws/src/hmdiff_ros"
if ! (
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  unset PYTHONPATH VIRTUAL_ENV AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH
  set +u
  # shellcheck disable=SC1091
  source "$core/install/setup.bash"
  cd "$ws"
  colcon --log-base log build --base-paths src \
    --event-handlers console_direct- console_stderr+ \
    --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE=/usr/bin/python3
) > "$ws/build.log" 2>&1; then
  say "the workspace did not build; the end of $ws/build.log:"
  tail -n 20 "$ws/build.log" >&2
  exit 6
fi

# the environment: the core and the workspace, this Python first on PATH (it has torch and
# mediapipe; the node's script runs with it), a private DDS domain on this host only
python_dir=$(dirname "$(command -v python)")
# a DDS domain of this checkout's own (1..100), so that two checkouts' tests on one host do not meet
domain=$(( 1 + 0x$(printf '%s' "$repo" | sha256sum | cut -c1-6) % 100 ))
env_file=$ws/env.sh
cat > "$env_file" << EOF
# written by .ci/ros_workspace.sh: source it to use the ROS 2 core and this checkout's packages
export RMW_IMPLEMENTATION=rmw_cyclonedds_cpp ROS_LOCALHOST_ONLY=1 ROS_DOMAIN_ID=\${ROS_DOMAIN_ID:-$domain}
source "$core/install/setup.bash"
source "$ws/install/setup.bash"
export PATH="$python_dir:\$PATH"
# Python imports hmdiff_ros from this checkout, not from the workspace's copy of it
export PYTHONPATH="$repo:\$PYTHONPATH"
# Humble's launch_testing pytest plugins do not load in pytest >= 8 (launch tests run with
# python -m launch_testing.launch_test; tests/test_launch_hmdiff.py does it)
export PYTEST_ADDOPTS="-p no:launch_testing -p no:launch_ros \${PYTEST_ADDOPTS:-}"
EOF
echo "$env_file"
