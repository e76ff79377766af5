"""Region proposal network (on C4)."""

from detection.modeling.rpn.rpn import RPN, RPNHead, build_rpn

__all__ = ["RPN", "RPNHead", "build_rpn"]
