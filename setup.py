"""hmdiff_ros: real-time 3D human mesh recovery (HMDiff) for ROS 2.

The same file serves pip (``pip install -e .``) and colcon/ament_python: the
``data_files`` below register the package in the ament index and install
launch files and the package manifest; ``build_py`` also installs the hmdiff_msgs
definitions as package data (see :class:`BuildPyWithMessages`).
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PACKAGE = "hmdiff_ros"
# this file's own folder: colcon --symlink-install runs a link to it from its build folder,
# where only the package, setup.cfg, package.xml and the data files are linked
HERE = Path(__file__).resolve().parent
# hmdiff_msgs' definitions (msg/msg/*.msg, the ROS interface package next to this one) also
# go into the built package as hmdiff_ros/ros/msg/*.msg: the bag tool writes them into the
# bags it makes, also where the package is installed without this source tree.
MSG_SOURCES = sorted(glob(str(HERE / "msg" / "msg" / "*.msg")))
MSG_TARGET = Path(PACKAGE, "ros", "msg")


class BuildPyWithMessages(build_py):
    """``build_py`` that also copies :data:`MSG_SOURCES` into :data:`MSG_TARGET` of the build."""

    def run(self) -> None:
        super().run()
        if not MSG_SOURCES:
            raise FileNotFoundError("msg/msg/*.msg not found next to setup.py: cannot build hmdiff_ros")
        target = Path(self.build_lib, MSG_TARGET)
        self.mkpath(str(target))
        for src in MSG_SOURCES:
            self.copy_file(src, str(target / Path(src).name))

    def get_outputs(self, include_bytecode: bool = True) -> list:
        copies = [str(Path(self.build_lib, MSG_TARGET, Path(src).name)) for src in MSG_SOURCES]
        return super().get_outputs(include_bytecode) + copies


# PyTorch: 2.13.0 is the newest release we test. The bound also keeps pip from
# replacing a platform build that is already installed (JetPack wheels, CPU builds).
TORCH = "torch>=2.1,<=2.13.0"
# mediapipe 0.10.14 is the last release that ships the BlazePose models inside its
# wheel (nothing is downloaded at run time); it needs protobuf<5, hence onnx<1.20.
MEDIAPIPE = ["mediapipe==0.10.14", "protobuf>=4.25.3,<5"]
# ONNX Runtime runs the model by default (backend auto: about 1.6x PyTorch eager on 2 CPU cores),
# on an export made once with torch.onnx, which needs onnx
ONNX = ["onnx>=1.16,<1.20", "onnxruntime>=1.17"]
# Anny builds training data and the topology asset; inference never needs it.
ANNY = ["anny==0.6.2", "trimesh>=4", "rtree>=1", "fast-simplification>=0.1.7", "scipy>=1.8"]

EXTRAS = {
    "anny": ANNY,
    "smpl": ["smplx>=0.1.28"],
    "onnx": ONNX,
    "bag": ["rosbags>=0.11.7,<0.12"],
    "train": ANNY + ["matplotlib>=3.6"],
    "tensorrt": ["tensorrt>=10,<11"],  # engines run on CUDA torch tensors: no pycuda needed
    "test": ANNY
    + ONNX
    + [
        "smplx>=0.1.28",
        "rosbags>=0.11.7,<0.12",
        "rosbags-image>=0.10,<0.11",  # reference for our image decoding (tests/test_image_decode.py)
        "mcap-ros2-support>=0.5",  # decodes our MCAP output from its stored schemas, as Foxglove does
        "pytest>=7",
        "hypothesis>=6",  # property tests of the parsers of user data (images, boxes, intrinsics)
        "pillow>=9",  # writes EXIF-rotated and multi-page test images
        # the formatter's output is checked (tests/test_code_quality.py): one minor version
        "ruff>=0.17,<0.18",
        "import-linter>=2.1,<3",  # the layer and no-cycle contracts in setup.cfg (tests/test_layers.py)
        "diffusers>=0.30",  # cross-checks our DDIM scheduler
        # colcon from PyPI: tests check that a workspace sees hmdiff_ros and hmdiff_msgs
        "colcon-core>=0.15",
        "colcon-ros>=0.4",
        "colcon-recursive-crawl>=0.2",
        "colcon-package-information>=0.3",
        "lark>=1.1",  # ROS 2 launch imports it (Debian's python3-lark is not on other Pythons' path)
    ],
}

setup(
    name=PACKAGE,
    version="0.1.0",
    description="HMDiff human mesh recovery for ROS 2: pose prior, few-step diffusion with DAT, "
    "ONNX Runtime / TensorRT runtimes, rclpy node and rosbag2 tools.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={
        f"{PACKAGE}.body": ["assets/*.npz", "assets/*.json"],
        f"{PACKAGE}.data": ["assets/*.npz"],  # the fitted prior simulator
        f"{PACKAGE}.model": ["configs/*.yaml", "checkpoints/*/*.json", "checkpoints/*/*.safetensors"],
        PACKAGE: ["assets/demo/*"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py") + glob("launch/*.yaml") + glob("launch/*.rviz")),
    ],
    install_requires=[
        "numpy>=1.23",
        TORCH,
        "safetensors>=0.4",
        "tqdm>=4.60",
        "pyyaml>=5.4",
        "opencv-contrib-python>=4.5",  # the OpenCV that mediapipe itself depends on
        *MEDIAPIPE,
        *ONNX,
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["hmdiff = hmdiff_ros.cli:main", "hmdiff_node = hmdiff_ros.ros:node_main"]},
    cmdclass={"build_py": BuildPyWithMessages},
    zip_safe=False,
)
