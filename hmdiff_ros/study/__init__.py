"""The research tools: how the real pose prior fails and how the model compares, measured
offline. Nothing at run time needs them, and no runtime layer imports them (setup.cfg's
import contracts).

- the prior study (``hmdiff data prior-study``): people rendered as images
  (``people_render``), made in chunks (``study_config``, ``study_worker``, ``prior_study``,
  ``study_sheet``), analysed and reported (``prior_analysis``, ``prior_figures``,
  ``prior_report``), the simulator fitted to it (``prior_fit``, ``swaps``); reading a study
  back, training included, is :mod:`hmdiff_ros.data.study_reader`;
- evaluations beside the yardsticks: the model on the study (``study_eval``), on real frames
  (``real_data``, ``eval_real``), the selection and test protocol (``protocol``), the
  ablation (``ablate``), and how well the pose families cover real poses
  (``pose_coverage``).
"""
