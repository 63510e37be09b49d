"""HMDiff: image encoder, point denoiser, DDIM scheduler and DAT guidance. ROS-free core."""
