"""The ROS 2 layer: the rclpy node (``node``) and rosbag2 processing without ROS (``bag``),
sharing one boundary: camera messages in and images out (``bridge``), a frame's output
messages (``convert``), body frames and TF (``frames``); and the node's parameters
(``params``), frame health (``health``) and newest-frame worker (``worker``); the node under a
camera-rate stream (``load``, ``hmdiff bench-node``). Only ``node`` and ``load`` import rclpy."""


def node_main(args=None) -> None:
    """Entry point of ``hmdiff_node``: a clear message where ROS 2 is not sourced."""
    import signal

    # Ctrl-C while torch, MediaPipe and rclpy load is noted and acted on once they have: a
    # KeyboardInterrupt raised inside a C++ extension's import aborts the process
    stop = []
    previous = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    try:
        from hmdiff_ros.ros.node import main
    except ImportError as exc:
        raise SystemExit(
            f"hmdiff_node needs ROS 2 (rclpy) and the built hmdiff_msgs package: {exc}. "
            "Source your ROS 2 setup and the workspace (see README, ROS 2)."
        ) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    if stop:
        raise SystemExit(0)  # a requested stop
    main(args)
