"""A web UI: upload an image, chat about it, watch the answer stream in (Gradio).

    python -m llava.serve.web --model-path checkpoints/llava-smol-task-merged
    python -m llava.serve.web --model-path liuhaotian/llava-v1.5-7b --load-4bit --port 7860
    python -m llava.serve.web                       # the embedded default (after `make demo`)

Then open http://127.0.0.1:7860.  A new image starts a new conversation;
"Clear" forgets the history and keeps the image; "Stop" ends an answer early
(a stopped answer is not kept in the history, as in the CLI).

Listens on 127.0.0.1 unless --host says otherwise (then set --auth USER:PASS).
Uploads are capped in bytes (--max-image-bytes) and decoded with the same
pixel cap as the other front ends, so a decompression bomb is refused.  One
answer is generated at a time, the model being one set of weights: other
browsers wait in Gradio's queue, which shows their place.  Gradio's usage
analytics are switched off.
"""

# No `from __future__ import annotations`: Gradio reads the handlers' gr.Request annotation at run time.
import argparse
import html
import logging
import os
import sys
import threading
from pathlib import Path

from llava.extras import missing_extra
from llava.image_decode import load_image
from llava.mm_utils import ImageError
from llava.model.args import add_model_args, check_model_args, load_model_or_exit, precision_note
from llava.model.text_embedder import load_text_embedder
from llava.printable import printable
from llava.serve.chat import ChatSession
from llava.serve.images import MAX_BYTES, MAX_PIXELS
from llava.serve.search import Index, describe

log = logging.getLogger("llava.serve.web")
TITLE = "LLaVA chat"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1: this machine only")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--auth", default=os.environ.get("LLAVA_WEB_AUTH"), metavar="USER:PASS",
                    help="require this login (default: $LLAVA_WEB_AUTH, else none)")
    ap.add_argument("--temperature", type=float, default=0.2, help="the slider's start value; 0 = greedy")
    ap.add_argument("--max-new-tokens", type=int, default=512, help="the slider's start value")
    ap.add_argument("--max-tokens", type=int, default=1024, help="the most new tokens the slider allows")
    ap.add_argument("--max-image-bytes", type=int, default=MAX_BYTES)
    ap.add_argument("--max-image-pixels", type=int, default=MAX_PIXELS)
    ap.add_argument("--max-question-chars", type=int, default=4000)
    ap.add_argument("--queue-size", type=int, default=64, help="requests waiting beyond this are refused")
    ap.add_argument("--retrieval-db", default=None, metavar="DB",
                    help="add a Search tab over this table (built by python -m llava.tasks.retrieval build)")
    ap.add_argument("--embedder", default=None, help="its sentence-transformers model dir (default: all-MiniLM-L6-v2)")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    check_model_args(ap, args)
    if args.auth is not None and ":" not in args.auth:
        ap.error("--auth takes USER:PASS")
    if not 0 < args.max_new_tokens <= args.max_tokens:
        ap.error("--max-new-tokens must be between 1 and --max-tokens")
    return args


class Generations:
    """The answer being generated for each browser session, so its Stop button can end it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: dict[str, object] = {}

    def start(self, session: str, chat) -> None:
        with self._lock:
            self._running[session] = chat

    def finish(self, session: str, chat) -> None:
        with self._lock:
            if self._running.get(session) is chat:
                del self._running[session]

    def stop(self, session: str) -> bool:
        with self._lock:
            chat = self._running.get(session)
        if chat is not None:
            chat.stop()
        return chat is not None


def build_ui(loaded, args, index=None):
    """The Gradio app: a Chat tab, and with `index` (llava.serve.search.Index) a Search tab."""
    try:  # here, not above: Gradio (the `serve` extra) takes seconds to import, which a refused flag need not wait for
        import gradio as gr  # noqa: PLC0415
    except ImportError as exc:  # the `serve` extra
        raise missing_extra("serve", exc, "the web UI") from exc

    generations = Generations()

    def read_image(path: str | None):
        if not path:
            return None
        # The shared decoder and its errors, with this server's caps; named by the upload's file name.
        return load_image(path, args.max_image_bytes, args.max_image_pixels, name=printable(Path(path).name))

    def new_image(path=None):
        """A new (or removed) image: a new conversation."""
        if path:
            try:
                img = read_image(path)
            except ImageError as exc:
                gr.Warning(str(exc))
                return None, [], [], "No image: the upload was refused.", None, None
            return path, [], [], f"Image {img.width}x{img.height}: a new conversation.", img, gr.skip()
        return None, [], [], "No image: text-only chat.", None, gr.skip()

    def clear(path):
        return [], [], "History cleared." + (" Same image." if path else "")

    def respond(question, path, history, messages, temperature, max_new_tokens, request: gr.Request):
        question = (question or "").strip()
        if not question:
            gr.Warning("Type a question first.")
            yield question, history, messages, gr.skip()
            return
        if len(question) > args.max_question_chars:
            gr.Warning(f"The question has {len(question):,} characters; at most {args.max_question_chars:,}.")
            yield question, history, messages, gr.skip()
            return
        try:
            image = read_image(path)
        except ImageError as exc:
            gr.Warning(str(exc))
            yield question, history, messages, gr.skip()
            return
        chat = ChatSession(loaded, image=image, conv_mode=args.conv_mode, temperature=float(temperature),
                           max_new_tokens=int(min(max_new_tokens, args.max_tokens)), history=list(history))
        messages = [*messages, {"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        yield "", history, messages, "Generating ..."
        session = request.session_hash if request is not None else ""
        generations.start(session, chat)
        text = ""
        try:
            for piece in chat.ask(question):
                text += piece
                messages[-1] = {"role": "assistant", "content": text}
                yield "", history, messages, "Generating ..."
        except ValueError as exc:  # the question: over the context, "<image>" typed in; refused, history kept
            messages[-1] = {"role": "assistant", "content": text + " [refused]"}
            gr.Warning(str(exc))
            yield question, history, messages, f"Refused: {html.escape(str(exc))}"  # the status is Markdown
            return
        except Exception as exc:  # a fault of the server's: its log gets the traceback, the user a line
            log.exception("generation failed")
            messages[-1] = {"role": "assistant", "content": text + " [error]"}
            gr.Warning(f"Generation failed: {exc}")
            yield question, history, messages, f"Error: {exc}"
            return
        finally:
            generations.finish(session, chat)
        if len(chat.history) > len(history):
            usage = chat.last_usage
            status = f"{usage['completion_tokens']} new tokens, {usage['prompt_tokens']} in the prompt."
            yield "", chat.history, messages, status
        else:  # stopped: the cut answer stays on screen but not in the history
            messages[-1] = {"role": "assistant", "content": text + " [stopped]"}
            yield "", history, messages, "Stopped; that answer is not kept in the history."

    def stop(request: gr.Request):
        generations.stop(request.session_hash if request is not None else "")

    def search_tab(index, read_image):
        """Upload an image (or type a text): its description, then the nearest items of the table."""
        with gr.Row():
            with gr.Column(scale=1):
                query_file = gr.File(file_types=["image"], type="filepath", label="Query image",
                                     elem_id="search-upload")
                query_text = gr.Textbox(label="... or a text query", elem_id="search-text")
                mode = gr.Radio(["similar", "complementary"], value="similar", label="Items",
                                info="complementary: the nearest items of other categories than the query's")
                k = gr.Slider(1, 50, value=5, step=1, label="Top k")
                go = gr.Button("Search", variant="primary", elem_id="search")
            with gr.Column(scale=2):
                described = gr.Markdown(elem_id="search-status")
                table = gr.Dataframe(headers=["rank", "score", "category", "image", "description"],
                                     interactive=False, elem_id="results", wrap=True)
                gallery = gr.Gallery(label="Images", columns=5, height=220, elem_id="result-images")

        def run_search(path, text, mode, k):
            text = (text or "").strip()
            if path:
                try:
                    image = read_image(path)
                except ImageError as exc:
                    gr.Warning(str(exc))
                    return gr.skip(), gr.skip(), gr.skip()
                text = describe(loaded, image, args.conv_mode)
                said = f"The model describes the image as: *{text}*"
            elif text:
                said = f"Text query: *{text}*"
            else:
                gr.Warning("Upload an image or type a text query.")
                return gr.skip(), gr.skip(), gr.skip()
            result = index.search(text, int(k), mode)
            rows = [[n, r["score"], r["category"], r["image"], r["description"]]
                    for n, r in enumerate(result["results"], 1)]
            pictures = [(r["image_path"], f"{r['score']:.2f} {r['category']}") for r in result["results"]
                        if Path(r["image_path"]).is_file()]
            return f"{said} (its category: {result['query_category']})", rows, pictures

        go.click(run_search, [query_file, query_text, mode, k], [described, table, gallery],
                 concurrency_limit=1, concurrency_id="generate")

    with gr.Blocks(title=TITLE, analytics_enabled=False) as ui:
        gr.Markdown(f"### {TITLE}: `{Path(args.model_path).name}`")
        history = gr.State([])  # [(question, answer)] as the model sees it
        image_path = gr.State(None)
        with gr.Tab("Chat", id="chat-tab"):
            with gr.Row():
                with gr.Column(scale=1):
                    # Uploads come as files and are decoded by us, with the pixel cap, not by gr.Image, which
                    # decodes without one and answers a corrupt file with a bare "Error".
                    upload = gr.File(file_types=["image"], type="filepath", label="Image", elem_id="upload")
                    preview = gr.Image(interactive=False, show_label=False, elem_id="preview", height=260,
                                       buttons=["fullscreen"])
                    temperature = gr.Slider(0, 1.5, value=args.temperature, step=0.05, label="Temperature (0 = greedy)")
                    max_new = gr.Slider(1, args.max_tokens, value=args.max_new_tokens, step=1, label="Max new tokens")
                with gr.Column(scale=2):
                    chatbot = gr.Chatbot(label="Chat", elem_id="chat", height=420, feedback_options=None,
                                         buttons=["copy", "copy_all"])
                    question = gr.Textbox(placeholder="Ask about the image and press Enter", show_label=False,
                                          elem_id="question", max_lines=6)
                    with gr.Row():
                        send = gr.Button("Send", variant="primary", elem_id="send")
                        stop_btn = gr.Button("Stop", elem_id="stop")
                        clear_btn = gr.Button("Clear", elem_id="clear")
                    status = gr.Markdown("Upload an image, or chat without one.", elem_id="status")

        if index is not None:
            with gr.Tab("Search", id="search-tab"):
                search_tab(index, read_image)
        # Queued (toasts need the queue).  .upload and .clear, not .change: emptying a refused upload
        # below must not count as a new conversation.
        image_outputs = [image_path, history, chatbot, status, preview, upload]
        upload.upload(new_image, upload, image_outputs)
        upload.clear(new_image, None, image_outputs)
        inputs = [question, image_path, history, chatbot, temperature, max_new]
        outputs = [question, history, chatbot, status]
        for trigger in (question.submit, send.click):
            trigger(respond, inputs, outputs, concurrency_limit=1, concurrency_id="generate")
        stop_btn.click(stop, None, None, queue=False)
        clear_btn.click(clear, image_path, [history, chatbot, status], queue=False)
        chatbot.clear(clear, image_path, [history, chatbot, status], queue=False)  # the chat's own bin icon
    ui.queue(max_size=args.queue_size, default_concurrency_limit=1)
    return ui


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.auth:
        log.warning("listening on %s without --auth: anyone who can reach this port can use the model", args.host)
    loaded = load_model_or_exit(args)
    log.info("loaded %s%s", args.model_path, precision_note(args))
    index = None
    if args.retrieval_db:
        index = Index(args.retrieval_db, load_text_embedder(args.embedder))
    ui = build_ui(loaded, args, index)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    # The Search tab shows the table's images: Gradio serves files only from folders it is told of.
    allowed = [index.meta["image_root"]] if index is not None and index.meta.get("image_root") else None
    ui.launch(server_name=args.host, server_port=args.port, auth=auth, share=False, ssr_mode=False,
              max_file_size=args.max_image_bytes, show_error=True, quiet=False, allowed_paths=allowed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
