// The playground's entry point: the API key field, the service state, the models, the chat.

import { apiKey } from "./api.js";
import { Chat } from "./chat.js";
import { ModelsPanel } from "./models.js";
import { bindParams } from "./params.js";
import { ServiceState } from "./service.js";
import { byId } from "./view.js";

function bindKey() {
  const input = byId("api-key");
  input.value = apiKey.get();
  input.addEventListener("input", () => apiKey.set(input.value.trim()));
  byId("key-forget").addEventListener("click", () => {
    input.value = "";
    apiKey.set("");
  });
}

const service = new ServiceState();
const models = new ModelsPanel(service);
new Chat(service);
bindKey();
bindParams();
service.onChange((health) => {
  byId("mock-options").hidden = health?.backend !== "mock";
});
service.run();
models.load().then(() => {
  document.body.dataset.ready = "true";
});
