#!/usr/bin/env bash
# Builds (or reuses) a minimal ROS 2 core (Humble or Jazzy) from ../shared/ros2 and a colcon
# workspace with this checkout's hmdiff_msgs + hmdiff_ros on top, then writes an environment
# file to source:
#
#   bash .ci/ros_workspace.sh [humble|jazzy]       # prints the path of the env file (default humble)
#   source "$(bash .ci/ros_workspace.sh jazzy)"    # then: python -m pytest -q tests
#
# The sources: humble-core-src.tar.gz and jazzy/jazzy-core-src.tar.gz in
# ${HMDIFF_ROS2_SOURCES:-../shared/ros2}. A core is built once per source tarball (keyed by its
# hash) into ${HMDIFF_ROS2_CACHE:-~/.cache/hmdiff_ros/ros2}/<distro>-<hash>/ (Humble about 7
# minutes on 2 cores, Jazzy about 10); the workspace (a few seconds) is rebuilt on every call,
# one per distribution. The Debian packages the build needs (the same for both) are installed
# when missing (as root, with apt-get); what cannot be had is reported on stderr and the script
# exits non-zero: the ROS tests then skip with their reason.
#
# cv_bridge (optional; HMDIFF_CV_BRIDGE=0 leaves it out) is built once per source tarball and
# NumPy major version into .../<distro>-<hash>-cv_bridge-<hash>-np<N>/, an overlay on the core
# (about 30 s, plus libopencv-dev libboost-python-dev python3-opencv from apt-get, about 830 MB).
# Both distributions build it from vision_opencv's humble branch in the Humble tarball: the
# jazzy branch's cv_bridge needs rclcpp, which neither core has, and the Python API the node
# uses (imgmsg_to_cv2, cv2_to_imgmsg) is the same. It is compiled against the NumPy headers of
# the python on PATH (NumPy 2 headers also load under Debian's NumPy 1). Where it cannot be had,
# the reason goes to stderr, env.sh lacks it and the node uses its numpy image path (the
# cv_bridge tests skip); a failed build is not retried until its .failed file is removed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
sources=${HMDIFF_ROS2_SOURCES:-$repo/../shared/ros2}
distro=${1:-humble}
say() { echo "ros_workspace: $*" >&2; }
case $distro in
  humble) tarball=$sources/humble-core-src.tar.gz minutes=7 ;;
  jazzy) tarball=$sources/jazzy/jazzy-core-src.tar.gz minutes=10 ;;
  *)
    say "unknown ROS 2 distribution '$distro': expected humble or jazzy"
    exit 2
    ;;
esac
if [ ! -f "$tarball" ]; then
  say "no ROS 2 $distro sources at $tarball: nothing built"
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
# install_missing WHAT PACKAGE...: installs those of the Debian packages that are missing (as root,
# with apt-get); where it cannot, says why on stderr and returns 1
install_missing() {
  local what=$1 p start missing=()
  shift
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get > /dev/null; then
    say "$what needs Debian packages and there is no root apt-get to install them: ${missing[*]}"
    return 1
  fi
  start=$(date +%s)
  say "installing ${#missing[@]} Debian packages for $what: ${missing[*]}"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"; } > /dev/null 2>&1; then
    say "apt-get could not install what $what needs: ${missing[*]}"
    return 1
  fi
  say "installed them in $(($(date +%s) - start)) s"
}
install_missing "the ROS 2 core" "${packages[@]}" || exit 4

cache=${HMDIFF_ROS2_CACHE:-$HOME/.cache/hmdiff_ros/ros2}
key=$(sha256sum "$tarball" | cut -c1-16)
core=$cache/$distro-$key
if [ -f "$core/install/setup.bash" ]; then
  say "using the ROS 2 $distro core built at $(date -r "$core/install/setup.bash" '+%F %H:%M') in $core"
else
  partial=$core.partial
  rm -rf "$partial" && mkdir -p "$partial"
  tar xzf "$tarball" -C "$partial"
  start=$(date +%s)
  say "building the ROS 2 $distro core into $core (about $minutes minutes on 2 cores; log: $core.log)"
  if ! ROOT="$partial" bash "$partial/build.sh" > "$core.log" 2>&1; then
    say "the ROS 2 $distro core did not build; the end of $core.log:"
    tail -n 20 "$core.log" >&2
    exit 5
  fi
  rm -rf "$partial/build" "$partial/log"  # keep src and install: 60 MB
  rm -rf "$core" && mv "$partial" "$core"
  say "built the ROS 2 $distro core in $(($(date +%s) - start)) s"
fi

# cv_bridge, an overlay on the core built from vision_opencv (humble) in the Humble tarball, as
# its build.sh WITH_CV_BRIDGE=1 does
cv_bridge_overlay() {
  local py numpy_major numpy_include overlay partial start src_tarball=$sources/humble-core-src.tar.gz
  if ! tar tzf "$src_tarball" src/vision_opencv/cv_bridge/package.xml > /dev/null 2>&1; then
    say "no cv_bridge sources in $src_tarball: cv_bridge not built"
    return 1
  fi
  py=$(command -v python || command -v python3)
  read -r numpy_major numpy_include < <("$py" -c \
    'import numpy; print(numpy.__version__.split(".")[0], numpy.get_include())' 2> /dev/null) || true
  if [ -z "${numpy_major:-}" ]; then
    say "no numpy in $py: cv_bridge not built"
    return 1
  fi
  overlay=$core-cv_bridge-$(sha256sum "$src_tarball" | cut -c1-12)-np$numpy_major
  if [ -f "$overlay/install/setup.bash" ]; then
    echo "$overlay"
    return 0
  fi
  if [ -f "$overlay.failed" ]; then
    say "cv_bridge did not build before (see $overlay.failed; remove it to try again): the node uses its numpy image path"
    return 1
  fi
  install_missing cv_bridge libopencv-dev libboost-python-dev python3-opencv || return 1
  partial=$overlay.partial
  rm -rf "$partial" && mkdir -p "$partial"
  tar xzf "$src_tarball" -C "$partial" src/vision_opencv/cv_bridge
  start=$(date +%s)
  say "building cv_bridge into $overlay (NumPy $numpy_major headers; log: $overlay.log)"
  if ! (
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    unset PYTHONPATH VIRTUAL_ENV AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH
    set +u
    # shellcheck disable=SC1091
    source "$core/install/setup.bash"
    cd "$partial"
    flags=()
    # an extension compiled against NumPy 2 headers loads under NumPy 1 too, not the reverse
    if [ "$numpy_major" -ge 2 ]; then flags=("-DCMAKE_CXX_FLAGS=-I$numpy_include"); fi
    nice -n 19 colcon --log-base log build --merge-install --base-paths src/vision_opencv/cv_bridge \
      --packages-select cv_bridge --event-handlers console_direct- console_stderr+ \
      --cmake-args -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
      -DPython3_EXECUTABLE=/usr/bin/python3 -DPYTHON_EXECUTABLE=/usr/bin/python3 "${flags[@]}"
  ) > "$overlay.log" 2>&1; then
    say "cv_bridge did not build (the node uses its numpy image path); the end of $overlay.log:"
    tail -n 20 "$overlay.log" >&2
    mv "$overlay.log" "$overlay.failed"
    rm -rf "$partial"
    return 1
  fi
  rm -rf "$partial/build" "$partial/log" "$partial/src"
  rm -rf "$overlay" && mv "$partial" "$overlay"
  say "built cv_bridge in $(($(date +%s) - start)) s"
  echo "$overlay"
}
cv_bridge_source=""
if [ "${HMDIFF_CV_BRIDGE:-1}" != 0 ] && cv_overlay=$(cv_bridge_overlay); then
  cv_bridge_source="source \"$cv_overlay/install/setup.bash\""
fi

# RViz 2 (optional, Humble only: its sources are Humble's), an overlay on the core built from
# $sources/rviz2 (rclcpp, tf2_ros, ... and rviz2; Debian's OGRE 1.12) once per tarball and
# patches into .../humble-<hash>-rviz2-<hash>/
# (about 28-32 minutes on 2 cores, plus about 400 MB of Debian packages), with Xvfb, xwd and
# ImageMagick to run it headless and take screenshots. HMDIFF_RVIZ2=1 builds it when it is
# missing; unset, a built one is used and none is built; 0 leaves it out. Where it cannot be had,
# the reason goes to stderr, env.sh lacks it and the RViz 2 tests skip; a failed build is not
# retried until its .failed file is removed.
rviz2_overlay() {
  local rviz_src=$sources/rviz2 rkey overlay partial start
  local rviz_packages=(qtbase5-dev libqt5svg5-dev libqt5opengl5-dev libogre-1.12-dev libassimp-dev
    libyaml-cpp-dev liburdfdom-dev liburdfdom-headers-dev libtinyxml2-dev libcurl4-openssl-dev
    libeigen3-dev liborocos-kdl-dev libignition-math-dev libxaw7-dev libxrandr-dev
    xvfb xauth x11-apps imagemagick libgl1-mesa-dri)
  if [ "$distro" != humble ]; then
    say "RViz 2 is built on the Humble core only (its sources here are Humble's): the RViz 2 tests skip on $distro"
    return 1
  fi
  if [ ! -f "$rviz_src/rviz2-humble-src.tar.gz" ] || [ ! -f "$rviz_src/build_rviz2.sh" ]; then
    say "no RViz 2 sources at $rviz_src: RViz 2 not built"
    return 1
  fi
  rkey=$(cat "$rviz_src/rviz2-humble-src.tar.gz" "$rviz_src/build_rviz2.sh" "$rviz_src"/patches/*.patch \
    2> /dev/null | sha256sum | cut -c1-12)
  overlay=$core-rviz2-$rkey
  if [ -f "$overlay/install/local_setup.bash" ] && command -v Xvfb > /dev/null; then
    echo "$overlay"
    return 0
  fi
  if [ "${HMDIFF_RVIZ2:-}" != 1 ] && [ ! -f "$overlay/install/local_setup.bash" ]; then
    say "RViz 2 is not built (HMDIFF_RVIZ2=1 builds it, about 32 minutes): the RViz 2 tests skip"
    return 1
  fi
  if [ -f "$overlay.failed" ]; then
    say "RViz 2 did not build before (see $overlay.failed; remove it to try again): the RViz 2 tests skip"
    return 1
  fi
  install_missing "RViz 2" "${rviz_packages[@]}" || return 1
  if [ -f "$overlay/install/local_setup.bash" ]; then
    echo "$overlay"
    return 0
  fi
  partial=$overlay.partial
  rm -rf "$partial" && mkdir -p "$partial"
  start=$(date +%s)
  say "building RViz 2 into $overlay (about 32 minutes on 2 cores; log: $overlay.log)"
  if ! bash "$rviz_src/build_rviz2.sh" "$core/install" "$partial" > "$overlay.log" 2>&1; then
    say "RViz 2 did not build (the RViz 2 tests skip); the end of $overlay.log:"
    tail -n 20 "$overlay.log" >&2
    mv "$overlay.log" "$overlay.failed"
    rm -rf "$partial"
    return 1
  fi
  rm -rf "$partial/build" "$partial/log" "$partial/src"  # keep install: about 50 MB
  rm -rf "$overlay" && mv "$partial" "$overlay"
  say "built RViz 2 in $(($(date +%s) - start)) s"
  echo "$overlay"
}
rviz2_source=""
if [ "${HMDIFF_RVIZ2:-1}" != 0 ] && rviz_overlay=$(rviz2_overlay); then
  rviz2_source="source \"$rviz_overlay/install/local_setup.bash\""
fi

# robot_state_publisher (and kdl_parser), on top of the RViz 2 overlay (its rclcpp, urdf, tf2_ros),
# from .ci/third_party/ once per tarball (about 2 minutes): tests/test_ros_hri.py checks the REP-155
# frames it makes from the node's bodies. Built where the RViz 2 overlay is; a failure is reported
# and its tests do without.
state_publisher_overlay() {
  local tarball=$repo/.ci/third_party/robot_state_publisher-humble-src.tar.gz overlay partial start
  overlay=$rviz_overlay-rsp-$(sha256sum "$tarball" | cut -c1-12)
  if [ -f "$overlay/install/local_setup.bash" ]; then
    echo "$overlay"
    return 0
  fi
  if [ -f "$overlay.failed" ]; then
    say "robot_state_publisher did not build before (see $overlay.failed; remove it to try again)"
    return 1
  fi
  partial=$overlay.partial
  rm -rf "$partial" && mkdir -p "$partial"
  tar xzf "$tarball" -C "$partial"
  start=$(date +%s)
  say "building robot_state_publisher into $overlay (log: $overlay.log)"
  if ! (
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    unset PYTHONPATH VIRTUAL_ENV AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH
    set +u
    # shellcheck disable=SC1091
    source "$core/install/setup.bash"
    # shellcheck disable=SC1091
    source "$rviz_overlay/install/local_setup.bash"
    cd "$partial"
    nice -n 19 colcon --log-base log build --merge-install --base-paths src \
      --event-handlers console_direct- console_stderr+ \
      --cmake-args -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
      -DPython3_EXECUTABLE=/usr/bin/python3 -DPYTHON_EXECUTABLE=/usr/bin/python3
  ) > "$overlay.log" 2>&1; then
    say "robot_state_publisher did not build; the end of $overlay.log:"
    tail -n 20 "$overlay.log" >&2
    mv "$overlay.log" "$overlay.failed"
    rm -rf "$partial"
    return 1
  fi
  rm -rf "$partial/build" "$partial/log" "$partial/src"
  rm -rf "$overlay" && mv "$partial" "$overlay"
  say "built robot_state_publisher in $(($(date +%s) - start)) s"
  echo "$overlay"
}
rsp_source=""
if [ -n "$rviz2_source" ] && rsp_overlay=$(state_publisher_overlay); then
  rsp_source="source \"$rsp_overlay/install/local_setup.bash\""
fi

# the workspace: this checkout's two packages, built with the core's (Debian's) Python
ws=$cache/ws-$distro-$(printf '%s' "$repo" | sha256sum | cut -c1-12)
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
# a DDS domain of this checkout's and distribution's own (1..100), so that two checkouts' tests
# on one host do not meet, nor a Humble daemon a Jazzy test (its ros2 CLI then misses nodes)
domain=$(( 1 + 0x$(printf '%s:%s' "$repo" "$distro" | sha256sum | cut -c1-6) % 100 ))
# this host only: Jazzy's rcl warns on ROS_LOCALHOST_ONLY (deprecated there) and reads the range
localhost=ROS_LOCALHOST_ONLY=1
[ "$distro" = humble ] || localhost=ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
env_file=$ws/env.sh
cat > "$env_file" << EOF
# written by .ci/ros_workspace.sh: source it to use the ROS 2 $distro core and this checkout's packages
export RMW_IMPLEMENTATION=rmw_cyclonedds_cpp $localhost ROS_DOMAIN_ID=\${ROS_DOMAIN_ID:-$domain}
source "$core/install/setup.bash"
${cv_bridge_source:-# cv_bridge: not built (see .ci/ros_workspace.sh); the node uses its numpy image path}
${rviz2_source:-# RViz 2: not built (see .ci/ros_workspace.sh); the RViz 2 tests skip}
${rsp_source:-# robot_state_publisher: not built (it needs the RViz 2 overlay); the REP-155 frame check is left out}
source "$ws/install/setup.bash"
export PATH="$python_dir:\$PATH"
# Python imports hmdiff_ros from this checkout, not from the workspace's copy of it
export PYTHONPATH="$repo:\$PYTHONPATH"
# Humble's launch_testing pytest plugins do not load in pytest >= 8 (launch tests run with
# python -m launch_testing.launch_test; tests/test_launch_hmdiff.py does it)
export PYTEST_ADDOPTS="-p no:launch_testing -p no:launch_ros \${PYTEST_ADDOPTS:-}"
EOF
echo "$env_file"
